"""Model fusion after training: parameter-level merging (``mtfuse.fusion.merge``) and output-level fusion."""
