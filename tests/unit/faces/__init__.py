"""Pure tests of what the faces serve: the native API's views and tokens file, `/metrics`,
the RAPI's bounds, `corral serve`'s flags, and views kept from one state to the next."""
