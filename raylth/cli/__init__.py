"""Layer 6: the command line (`raylth run|status|results|report`)."""
