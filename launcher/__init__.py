"""The process launcher of the embedded stack: each process's command line and the supervisor.

Plain Python beside the Django project: ``make run`` prepares the var dir with
``python -m launcher.stack prepare`` and starts the Procfile with
``python -m launcher.supervisor``.
"""
