"""Routing: the model (`model`), fitting it to a pool (`fit`) and the decisions on top (`router`)."""
