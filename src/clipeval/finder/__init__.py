"""The image finder: index a collection (``index``), search it (``search``, ``ann``), serve a page (``app``)."""
