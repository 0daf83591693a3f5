"""Import-time failure that is not an ImportError: wfastcgi lets it propagate as is."""

raise ValueError("raises_at_import fixture")
