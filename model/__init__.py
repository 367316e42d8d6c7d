"""ResShift core: schedules, networks, sampler, tiling, model directories.

Public API (see DESIGN.md): ``model.load``, ``model.import_official``.
"""
