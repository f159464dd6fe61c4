"""Repairing gaps from the exchanges' public REST trade history."""
