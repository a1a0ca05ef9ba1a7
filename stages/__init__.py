"""The trio shell: every await, subprocess, file, clock and psutil call lives here."""
