"""A package: `pkg.sub.application` needs the import of pkg.sub, not getattr on pkg."""

from _respond import make

application = make("pkg")
