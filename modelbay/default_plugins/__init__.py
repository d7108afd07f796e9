"""The built-in plugins: ModelBay's own sources, backends, commands and job kinds, registered through the same
hooks (`modelbay/hookspecs.py`) an installed plugin uses. They run first, so a plugin can replace one by name."""
