"""The migrations, applied in order by shared/db/migrate.py; installed as the package ``shared.db.migrations``
(pyproject.toml maps this folder there) so an installed wheel carries them."""
