"""The global Spaces configuration: its model, validation, SQL, schemas and views."""
