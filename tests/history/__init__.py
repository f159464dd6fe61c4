"""Tests of the REST-history repair engine (recorder/history/)."""
