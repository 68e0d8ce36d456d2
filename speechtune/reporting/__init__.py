"""Reporting: every system's scores side by side (:mod:`~speechtune.reporting.report`:
report.json/md and plots), the same as one self-contained HTML page
(:mod:`~speechtune.reporting.html`), and which systems are built, stale or missing
(:mod:`~speechtune.reporting.status`)."""
