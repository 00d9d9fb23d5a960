/// Customer key stores (local, AWS KMS, PKCS#11) behind one `KeyStore` protocol, each usable as a
/// `Keyring`. The backends arrive with the key-store issue; until then the raw keyrings of
/// `KeywardCrypto` are the only wrapping keys.
public enum KeywardKeyStores {}
