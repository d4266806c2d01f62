"""The run view (``crewbox web``): a read-only web page over the run log. See app.py."""
