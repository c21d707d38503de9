"""The job platform: job kinds, the queue, a job's life (submit, claim, lease, reap) and the worker."""
