"""The command line: a thin layer over the Python API (``sessionize run``, ``thresholds``,
``report``). ``main`` parses flags, ``options`` derives the rule flags and the rules
file's keys from the one declaration in :mod:`sessionize.rules`, ``progress`` draws
progress on stderr."""
