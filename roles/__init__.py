"""The roles of the post-training team, one module each; every role is one graph node."""
