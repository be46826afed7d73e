"""`jupyter flow ...`: the command line."""
