import os

from hypothesis import settings

# "ci" runs more examples; set HYPOTHESIS_PROFILE=dev for a quick local loop.
settings.register_profile("ci", max_examples=1000, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
