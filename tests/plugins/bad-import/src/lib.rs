//! A component that needs an import the host does not provide, so loading
//! it must fail with an error naming that import.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: "
        package acme:needs;
        interface launcher { launch: func(target: string) -> bool; }
        world needy { import launcher; export run: func() -> bool; }
    ",
});

struct Needy;

impl Guest for Needy {
    fn run() -> bool {
        acme::needs::launcher::launch("moon")
    }
}

export!(Needy);
