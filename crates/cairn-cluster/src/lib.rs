//! Cairn's cluster layer: peers, health, discovery, and the fetch pipeline
//! local -> peers -> origin. It talks to peers only through a client trait
//! of its own, implemented by `cairn-http`.
