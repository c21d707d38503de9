"""Models: the registry, training, import / export of users' classifiers, the independent classifier."""
