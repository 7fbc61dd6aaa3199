"""The projector engine (one for every projection): ``runner`` (the consume loop, batching,
dead letters and the commit order), ``tracking`` (the offsets stored with the rows), ``schema``
(migrations, the projection schemas and their builds), ``instruments`` (metrics and probes).
What records become lives beside it: ``projectors/read_models.py``, ``projectors/contacts.py``."""
