"""The servers chordrec runs: the MLflow tracking server and UI (:mod:`.mlflow_server`)
and the local PostgreSQL cluster a tracking server stores its runs in (:mod:`.postgres`)."""
