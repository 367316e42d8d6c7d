"""The ``resshift`` console command: the top layer, above ``model``, ``export`` and
``service``. Nothing below imports it."""
