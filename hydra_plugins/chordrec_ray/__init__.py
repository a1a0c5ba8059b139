"""chordrec's Hydra launcher on Ray's task API (``hydra/launcher=ray``): see
:mod:`hydra_plugins.chordrec_ray.ray_launcher`."""
