"""Checkpoint converters: rename tables from other layouts (detectron2, transformers) to this project's keys."""
