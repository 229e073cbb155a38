"""Laws, fitting, metrics and scoring."""
