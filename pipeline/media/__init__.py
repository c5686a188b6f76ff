"""What is kept of events: the on-disk store (:mod:`~pipeline.media.store`), snapshots
(:mod:`~pipeline.media.snapshots`) and clips (:mod:`~pipeline.media.clips`), and the sink that makes them
(:mod:`~pipeline.media.sink`)."""
