"""The dispatch pipeline: models, validation, segmentation, tasks and the CLI."""
