"""Shared test set-up."""
# DVC configures its log handlers (through colorama) on the streams current at its first import.
# Imported here, at collection, they are pytest's session-wide streams; a first import inside a
# test using capsys would bind them to that test's capture, closed before later in-process
# `Repo.reproduce()` calls log to it (seen when test files are spread over workers, -n 2).
import os

import dvc.repo  # noqa: F401

# Two test processes share 2 cores: a stage that would take every core takes one.
os.environ.setdefault("SELECT_THREADS", "1")
