"""`backend: ray`: experts served by a Ray Serve application past one machine (the `ray` extra).

`pool` (the client's `RayPool`), `chat_model` (its streaming chat model), `admin` (join the
cluster, deploy, residency, delete) and `app` (the Serve application the replicas run).
"""
