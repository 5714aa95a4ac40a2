"""Tables generated from the standard by tools/; never edited by hand."""
