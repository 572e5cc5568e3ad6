"""The parts of training that ``mtfuse.train.train`` (the loop) calls: set-up of the accelerator and the
optimizer, the step variants, the run log, checkpointed state, signals, and the final outputs."""
