"""parkwarden: warn the owner of an illegally parked car, then ticket it if it stays."""
