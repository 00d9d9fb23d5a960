// The subset of the PKCS#11 v2.40 (Cryptoki) interface Keyward uses, written from the OASIS
// specification: types, constants, and the function list whose layout every module shares.
// Structures use the platform's default alignment, as on every Unix.
#ifndef CPKCS11_H
#define CPKCS11_H

typedef unsigned char CK_BYTE;
typedef CK_BYTE CK_BBOOL;
typedef CK_BYTE CK_UTF8CHAR;
typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef CK_ULONG CK_FLAGS;
typedef CK_ULONG CK_SLOT_ID;
typedef CK_ULONG CK_SESSION_HANDLE;
typedef CK_ULONG CK_OBJECT_HANDLE;
typedef CK_ULONG CK_OBJECT_CLASS;
typedef CK_ULONG CK_KEY_TYPE;
typedef CK_ULONG CK_ATTRIBUTE_TYPE;
typedef CK_ULONG CK_MECHANISM_TYPE;
typedef CK_ULONG CK_USER_TYPE;
typedef void *CK_VOID_PTR;

typedef struct CK_VERSION { CK_BYTE major; CK_BYTE minor; } CK_VERSION;

typedef struct CK_INFO {
    CK_VERSION cryptokiVersion;
    CK_UTF8CHAR manufacturerID[32];
    CK_FLAGS flags;
    CK_UTF8CHAR libraryDescription[32];
    CK_VERSION libraryVersion;
} CK_INFO;

typedef struct CK_TOKEN_INFO {
    CK_UTF8CHAR label[32];
    CK_UTF8CHAR manufacturerID[32];
    CK_UTF8CHAR model[16];
    CK_BYTE serialNumber[16];
    CK_FLAGS flags;
    CK_ULONG ulMaxSessionCount;
    CK_ULONG ulSessionCount;
    CK_ULONG ulMaxRwSessionCount;
    CK_ULONG ulRwSessionCount;
    CK_ULONG ulMaxPinLen;
    CK_ULONG ulMinPinLen;
    CK_ULONG ulTotalPublicMemory;
    CK_ULONG ulFreePublicMemory;
    CK_ULONG ulTotalPrivateMemory;
    CK_ULONG ulFreePrivateMemory;
    CK_VERSION hardwareVersion;
    CK_VERSION firmwareVersion;
    CK_BYTE utcTime[16];
} CK_TOKEN_INFO;

typedef struct CK_ATTRIBUTE { CK_ATTRIBUTE_TYPE type; CK_VOID_PTR pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;
typedef struct CK_MECHANISM { CK_MECHANISM_TYPE mechanism; CK_VOID_PTR pParameter; CK_ULONG ulParameterLen; } CK_MECHANISM;

typedef struct CK_GCM_PARAMS {
    CK_BYTE *pIv;
    CK_ULONG ulIvLen;
    CK_ULONG ulIvBits;
    CK_BYTE *pAAD;
    CK_ULONG ulAADLen;
    CK_ULONG ulTagBits;
} CK_GCM_PARAMS;

typedef struct CK_C_INITIALIZE_ARGS {
    CK_VOID_PTR CreateMutex;
    CK_VOID_PTR DestroyMutex;
    CK_VOID_PTR LockMutex;
    CK_VOID_PTR UnlockMutex;
    CK_FLAGS flags;
    CK_VOID_PTR pReserved;
} CK_C_INITIALIZE_ARGS;

#define CK_TRUE 1
#define CK_FALSE 0

#define CKR_OK 0x000UL
#define CKR_ARGUMENTS_BAD 0x007UL
#define CKR_ATTRIBUTE_READ_ONLY 0x010UL
#define CKR_DEVICE_ERROR 0x030UL
#define CKR_ENCRYPTED_DATA_INVALID 0x040UL
#define CKR_ENCRYPTED_DATA_LEN_RANGE 0x041UL
#define CKR_KEY_HANDLE_INVALID 0x060UL
#define CKR_KEY_FUNCTION_NOT_PERMITTED 0x068UL
#define CKR_MECHANISM_INVALID 0x070UL
#define CKR_MECHANISM_PARAM_INVALID 0x071UL
#define CKR_OBJECT_HANDLE_INVALID 0x082UL
#define CKR_PIN_INCORRECT 0x0A0UL
#define CKR_PIN_LOCKED 0x0A4UL
#define CKR_SESSION_CLOSED 0x0B0UL
#define CKR_SESSION_HANDLE_INVALID 0x0B3UL
#define CKR_TOKEN_NOT_PRESENT 0x0E0UL
#define CKR_USER_ALREADY_LOGGED_IN 0x100UL
#define CKR_USER_NOT_LOGGED_IN 0x101UL
#define CKR_BUFFER_TOO_SMALL 0x150UL
#define CKR_CRYPTOKI_ALREADY_INITIALIZED 0x191UL

#define CKF_TOKEN_PRESENT 0x1UL
#define CKF_RW_SESSION 0x2UL
#define CKF_SERIAL_SESSION 0x4UL
#define CKF_OS_LOCKING_OK 0x2UL

#define CKU_USER 1UL

#define CKO_SECRET_KEY 4UL
#define CKK_AES 0x1FUL

#define CKA_CLASS 0x000UL
#define CKA_TOKEN 0x001UL
#define CKA_PRIVATE 0x002UL
#define CKA_LABEL 0x003UL
#define CKA_KEY_TYPE 0x100UL
#define CKA_ID 0x102UL
#define CKA_SENSITIVE 0x103UL
#define CKA_ENCRYPT 0x104UL
#define CKA_DECRYPT 0x105UL
#define CKA_VALUE_LEN 0x161UL
#define CKA_EXTRACTABLE 0x162UL

#define CKM_AES_KEY_GEN 0x1080UL
#define CKM_AES_GCM 0x1087UL

typedef CK_RV (*CK_FN)(void);  /* placeholder for entries Keyward never calls */

typedef struct CK_FUNCTION_LIST CK_FUNCTION_LIST;
typedef CK_RV (*CK_C_GetFunctionList)(CK_FUNCTION_LIST **);

/* The function list, in the order the specification fixes. */
struct CK_FUNCTION_LIST {
    CK_VERSION version;
    CK_RV (*C_Initialize)(CK_VOID_PTR);
    CK_RV (*C_Finalize)(CK_VOID_PTR);
    CK_RV (*C_GetInfo)(CK_INFO *);
    CK_RV (*C_GetFunctionList)(CK_FUNCTION_LIST **);
    CK_RV (*C_GetSlotList)(CK_BBOOL, CK_SLOT_ID *, CK_ULONG *);
    CK_FN C_GetSlotInfo;
    CK_RV (*C_GetTokenInfo)(CK_SLOT_ID, CK_TOKEN_INFO *);
    CK_FN C_GetMechanismList;
    CK_FN C_GetMechanismInfo;
    CK_FN C_InitToken;
    CK_FN C_InitPIN;
    CK_FN C_SetPIN;
    CK_RV (*C_OpenSession)(CK_SLOT_ID, CK_FLAGS, CK_VOID_PTR, CK_VOID_PTR, CK_SESSION_HANDLE *);
    CK_RV (*C_CloseSession)(CK_SESSION_HANDLE);
    CK_FN C_CloseAllSessions;
    CK_FN C_GetSessionInfo;
    CK_FN C_GetOperationState;
    CK_FN C_SetOperationState;
    CK_RV (*C_Login)(CK_SESSION_HANDLE, CK_USER_TYPE, CK_UTF8CHAR *, CK_ULONG);
    CK_FN C_Logout;
    CK_FN C_CreateObject;
    CK_FN C_CopyObject;
    CK_FN C_DestroyObject;
    CK_FN C_GetObjectSize;
    CK_RV (*C_GetAttributeValue)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE *, CK_ULONG);
    CK_RV (*C_SetAttributeValue)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE *, CK_ULONG);
    CK_RV (*C_FindObjectsInit)(CK_SESSION_HANDLE, CK_ATTRIBUTE *, CK_ULONG);
    CK_RV (*C_FindObjects)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE *, CK_ULONG, CK_ULONG *);
    CK_RV (*C_FindObjectsFinal)(CK_SESSION_HANDLE);
    CK_RV (*C_EncryptInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
    CK_RV (*C_Encrypt)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
    CK_FN C_EncryptUpdate;
    CK_FN C_EncryptFinal;
    CK_RV (*C_DecryptInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
    CK_RV (*C_Decrypt)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
    CK_FN C_DecryptUpdate;
    CK_FN C_DecryptFinal;
    CK_FN C_DigestInit;
    CK_FN C_Digest;
    CK_FN C_DigestUpdate;
    CK_FN C_DigestKey;
    CK_FN C_DigestFinal;
    CK_FN C_SignInit;
    CK_FN C_Sign;
    CK_FN C_SignUpdate;
    CK_FN C_SignFinal;
    CK_FN C_SignRecoverInit;
    CK_FN C_SignRecover;
    CK_FN C_VerifyInit;
    CK_FN C_Verify;
    CK_FN C_VerifyUpdate;
    CK_FN C_VerifyFinal;
    CK_FN C_VerifyRecoverInit;
    CK_FN C_VerifyRecover;
    CK_FN C_DigestEncryptUpdate;
    CK_FN C_DecryptDigestUpdate;
    CK_FN C_SignEncryptUpdate;
    CK_FN C_DecryptVerifyUpdate;
    CK_RV (*C_GenerateKey)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *);
    CK_FN C_GenerateKeyPair;
    CK_FN C_WrapKey;
    CK_FN C_UnwrapKey;
    CK_FN C_DeriveKey;
    CK_FN C_SeedRandom;
    CK_FN C_GenerateRandom;
    CK_FN C_GetFunctionStatus;
    CK_FN C_CancelFunction;
    CK_FN C_WaitForSlotEvent;
};

#endif
