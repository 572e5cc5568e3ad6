"""One file per merge method, each a pure function over one parameter's tensors registered in
``MERGE_METHODS`` (importing ``mtfuse.fusion.merge`` imports them all)."""
