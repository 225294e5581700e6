"""The base of the core's errors whose message is meant for the person who gave the input (torch-free).

A file that cannot be read as weights, a checkpoint for another
architecture, a missing weights file: the command line prints the message
on one line and exits 2 instead of showing a traceback, and the service
reports it as the job's error.
"""


class InputError(Exception):
    """Something the user supplied is wrong, and the message says what and how to fix it."""
