"""Domain logic: records, tags, ontology, extraction, schema. No Dagster imports here."""
