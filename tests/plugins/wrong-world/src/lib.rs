//! A well-formed component that is not a step plugin: it exports a
//! function of its own world and nothing the host looks for.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: "package acme:other; world other { export run: func() -> u32; }",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        7
    }
}

export!(Other);
