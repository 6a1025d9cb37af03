"""The training engine: the fit loop (:mod:`~mammotrain.engine.fit`), evaluation and
inference, every checkpoint format (:mod:`~mammotrain.engine.checkpoint`), DDP
(:mod:`~mammotrain.engine.distributed`), the optimiser step and lr schedules."""
