"""A city's own data in and out: plates, contacts, car parks and zones, from files (``parkwarden data``)."""
