"""The human-evaluation survey: seed-matched pairs in the browser, Left / Right / Same votes in SQL.

``app.main.ROUTERS`` mounts its routers: the researcher API
(``app.survey.api``, ``/v1/surveys``), the rater pages (``app.survey.pages``,
``/s/...``), the researcher pages (``app.survey.researcher``,
``/researcher/...``) and the pages' static files (``app.survey.web``).
docs/survey.md explains the study design; the tables are in
``worker.survey_models``.
"""
