"""Result reports: figures (the only matplotlib user) and tables (the only pandas user)."""
