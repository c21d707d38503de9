"""The SynthCXR demo: the steps `exemplar demo` and `make run` build."""
