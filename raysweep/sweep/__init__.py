"""How a sweep runs: `run.py` starts it (or resumes it) and waits for it, `lifecycle.py` says
how it ends (FINISHED, FAILED, KILLED), `progress.py` tells the user how it is going."""
