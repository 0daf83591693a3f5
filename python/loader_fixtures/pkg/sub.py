from _respond import make

application = make("pkg.sub")
