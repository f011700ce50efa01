"""Reports: a run's report.md/report.html, a sweep's summary, and a leaderboard of every run under a folder."""
