"""`simgen report`: fidelity, diversity, leakage and error analysis of a synthetic dataset against real photos.

Each part is a function ``section(ctx: ReportContext) -> Section``; :mod:`simgen.report.build` runs them and
writes report.json, report.html and the figures. Plain Python below the CLI, like the rest of simgen."""
