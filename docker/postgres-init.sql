-- Dagster's instance uses the database named by POSTGRES_DB; MLflow's backend store gets its own.
CREATE DATABASE mlflow;
