"""Fix a behaviour in one flow: discover it, choose candidate interventions, evaluate them together, rank them."""
