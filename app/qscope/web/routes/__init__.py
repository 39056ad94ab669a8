"""One router per resource: home (models and SAEs), saes (an SAE's features), features (the dashboard),
search, inspect."""
