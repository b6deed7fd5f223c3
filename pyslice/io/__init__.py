"""Files and reports: atomic writes, the progress line, and the outputs of a sampling run
(structures, trajectory, summary, report plot). Imported by name; nothing is loaded here."""
