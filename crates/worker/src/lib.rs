//! worker lib
